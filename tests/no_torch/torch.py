"""Makes `import torch` fail, to test export.py --pt where PyTorch is not installed."""
raise ImportError("No module named 'torch' (test stand-in)")
