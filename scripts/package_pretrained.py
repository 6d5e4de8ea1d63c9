#!/usr/bin/env python
"""Package the weights shipped inside genssl_hf from a run of the ``nih-shipped`` preset.

    python scripts/run_pipeline.py --preset genssl_hf/pipeline/presets/nih-shipped.json --output_dir outputs/nih-shipped
    python scripts/package_pretrained.py --run outputs/nih-shipped --real_data ../shared/data

Writes ``genssl_hf/generation/pretrained/nih-ldm-64`` and ``genssl_hf/training/pretrained/nih-genssl-mae-64``
(loadable as ``genssl_hf/nih-ldm-64`` / ``genssl_hf/nih-genssl-mae-64``), each measured, carded and
checked by the real-data leak guard (see ``genssl_hf.hub.shipped``).

    python scripts/package_pretrained.py --protocol-encoder --run_dir outputs/kermany_base \
        --candidates genssl=outputs/kermany_base/mae_genssl/model,genssl_10k=outputs/kermany_long/model \
        --pooled outputs/kermany_base/protocol_pooled_long.json --real_arm genssl=real_mae,genssl_10k=real_10k \
        --results_row genssl_realdata_kermany_long --protocol_command "..." --name nih-genssl-mae-64-protocol

writes ``genssl_hf/training/pretrained/nih-genssl-mae-64-protocol``: the GEN-SSL encoder chosen on
validation among protocol arms, carded with the protocol's pooled numbers (``genssl_hf.hub.shipped_protocol``).
"""

import sys

from genssl_hf.hub.shipped import main

if __name__ == "__main__":
    sys.exit(main())
