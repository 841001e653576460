"""Training: one run trained and cached by its inputs, its checks and memory, pre-training, and a profile's runs."""
