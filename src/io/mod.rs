//! File formats shared by stages: tensors in safetensors (and .npy), JSON sidecars.
