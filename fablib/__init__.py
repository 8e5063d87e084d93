"""Helpers of fabfile.py: remote queries and error handling (remote), the release mechanics of
deploy/rollback (releases), and what `fab provision` ships to a host (shipping)."""
import os

#: The repository (the fabfile's directory).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
