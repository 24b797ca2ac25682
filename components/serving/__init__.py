"""The serving component: a live upscaling service that follows the registry's LATEST.

- `follower.py`: which version a server holds; pull (sha256-verified), load, warm, switch; the
  `--watch` loop that keeps a TF Serving model folder in step with LATEST.
- `app.py`: the Ray Serve application builder (`components.serving.app:build_app`) and its deployment.
"""
