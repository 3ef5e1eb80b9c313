"""RegenGuide: image-guided regenerative medicine, from assessment to evidence."""

__version__ = "0.1.0"
