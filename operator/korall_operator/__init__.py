"""korall operator: a kopf operator reconciling InferenceModel and CaptureProfile into vision and audio workloads."""
