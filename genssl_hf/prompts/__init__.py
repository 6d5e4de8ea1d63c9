"""genssl_hf.prompts"""
