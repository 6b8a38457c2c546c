"""The dataset: sd-scripts' dataset TOML and its keys, the scan (images, captions, buckets),
image loading and augmentation, batching per epoch, latent / text caching, and the
`TrainingData` the loop draws batches from.
"""
