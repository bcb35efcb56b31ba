"""Datasets: images, labels, class names, prompt templates and splits. Nothing about models."""
