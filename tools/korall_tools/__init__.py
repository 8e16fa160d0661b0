"""Development generators: media with known content for the tests, the benches and the demos, never for a service.

- `demo_video`: a video of real photos (scikit-image) sliding over a background, standing in for a camera;
- `synth`: speech scenes from espeak-ng with sox noise, each with its ground truth, and the audio demo WAV.

They need what the images leave out (scikit-image, espeak-ng, sox), so they live outside the product packages:
the dev venv has them (`pip install -e '.[dev]'` installs every folder pyproject maps), the images copy only
`contract/` and their own deployable's folder and never carry this one.
"""
