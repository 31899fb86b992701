"""Weights from the PyTorch world: file reading, layouts (official mmpose, Hugging Face, MAE),
bicubic position-embedding resampling with torch's semantics. The CLI is vitpose_jax.convert."""
