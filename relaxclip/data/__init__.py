"""Dataset readers and the embedded synthetic benchmark."""
