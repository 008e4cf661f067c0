"""headstart extractor: backbones, weights, datasets, safe decoding, feature store, extraction pipeline."""
