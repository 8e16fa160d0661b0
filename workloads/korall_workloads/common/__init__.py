"""What both workload services share: the error map (`errors`), the settings base and start-up failure line
(`settings`), logging (`logs`), and the fan-out to live-stream clients (`broadcast`). Nothing here knows vision or
audio; both build on it."""
