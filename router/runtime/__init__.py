"""What the gateway calls per request: policy, scorers, verifier, artifact loader.

Pure and fast: same inputs, same outputs, no network, no clock. Never imports `router.offline`.
"""
