"""Hugging Face interop: export and import (`io`) through the model families (`families/`), the BOS rule
of exported runs (`bos`), probing any HF causal LM (`probe`, `kv`) and comparing it with our checkpoint
(`compare`)."""
