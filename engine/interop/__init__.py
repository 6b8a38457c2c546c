"""Other tools' files: sd-scripts / kohya_ss args TOMLs and GUI JSONs in (import) and out
(export), and accelerate configs.
"""
