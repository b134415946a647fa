"""Generated from protos/ by protos/generate.py (make protos). Do not edit."""
