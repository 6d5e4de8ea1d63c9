"""genssl_hf.processing"""
