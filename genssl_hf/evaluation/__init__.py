"""genssl_hf.evaluation"""
