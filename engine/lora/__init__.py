"""The LoRA itself: the network injected into the UNet and text encoders, its safetensors file
and metadata, sd-scripts' key names, and inspecting a file.
"""
