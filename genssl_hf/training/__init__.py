"""genssl_hf.training"""
