"""The Ray Tune layer: a trainable over `cnnsearch.fit` and the `python -m tune.run` runner.

The only package of the project that imports Ray.
"""
