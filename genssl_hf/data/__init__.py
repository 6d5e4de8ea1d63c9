"""genssl_hf.data"""
