"""Makes `import numpy` fail, to test export.py on a Python without numpy."""
raise ImportError("No module named 'numpy' (test stand-in)")
