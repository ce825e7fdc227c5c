"""Analyses of trained models, one concept per module:

- ``decomposition``  which term of the change of variables prefers the OOD data (Figure 4)
- ``curves``         likelihood of train, test and OOD data over training (Figure 5)
- ``families``       PixelCNN and VAE beside Glow (Figure 3), the VAE bound against k
- ``second_order``   the second-order expansion of log p (Section 5), closed forms, graying, contrast
- ``remedies``       OOD scores that work: typicality, input complexity, density of states
"""
