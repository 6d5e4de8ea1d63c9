"""genssl_hf.hub"""
