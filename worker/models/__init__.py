"""Models the project trains and ships (data files, loaded with from_pretrained)."""
