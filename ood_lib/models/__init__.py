"""Model families, one file each, all implementing :class:`~ood_lib.models.base.DensityModel`:

- ``glow``      Glow (affine coupling) and constant-volume Glow (additive coupling): continuous
- ``pixelcnn``  gated PixelCNN with a 256-way softmax per subpixel: discrete
- ``vae``       convolutional VAE with a discretized-logistic decoder: discrete (a bound)

:mod:`ood_lib.zoo.registry` maps model names to these families.
"""
