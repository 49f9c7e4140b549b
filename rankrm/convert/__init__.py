"""Converters: model files in formats transformers cannot read -> cached transformers directories."""
