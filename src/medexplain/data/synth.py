"""Synthetic datasets with known ground truth: fundus photographs with lesions and brain-like atrophy images."""
