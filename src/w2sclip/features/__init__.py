"""Image-feature extraction and the fingerprinted cache."""
