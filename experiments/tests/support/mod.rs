pub mod tiny_gguf;
