"""``python -m genssl_hf.training.generator {autoencoder,ldm} [options]``"""

from genssl_hf.training.generator import main

main()
