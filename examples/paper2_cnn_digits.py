"""Seed paper 2 on a CNN: scikit-learn's handwritten digits, normal vs DVA vs chip-matched DVA
training, static vs dynamic fixed point, under programming variation, on/off ratio and bits per
cell (``examples/paper2_smallnets.py`` says what runs; the network is ``nn.smallnets.DigitsCNN``).

    python examples/paper2_cnn_digits.py --out results/paper2_cnn            # the RESULTS.md run
    python examples/paper2_cnn_digits.py --out /tmp/p2 --tiny                # a smoke test, seconds
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper2_smallnets import main  # noqa: E402

if __name__ == "__main__":
    main("cnn", sys.argv[1:])
