"""Models: the tiny LLaMA and pretrained causal LMs, their token encoding and LoRA; named presets."""
