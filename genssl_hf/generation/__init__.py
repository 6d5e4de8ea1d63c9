"""genssl_hf.generation"""
