"""Fine-tuning: local tokenizers and models, LoRA / QLoRA / full SFT with trl + peft, launched with accelerate."""
