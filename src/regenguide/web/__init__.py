"""The clinician web pages (static single-page app over the API)."""
