"""Detectors trained elsewhere, converted into detect model folders (torchvision's COCO models)."""
