"""Tests that drive a real JupyterLab and report page in headless Chromium (marker ``browser``)."""
