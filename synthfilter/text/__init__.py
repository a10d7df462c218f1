"""Text normalisation and shingling."""
