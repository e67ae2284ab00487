"""Seed paper 2 on an LSTM: SST-2 sentences, a word-level LSTM classifier trained from scratch,
normal vs DVA vs chip-matched DVA training, static vs dynamic fixed point, under programming
variation, on/off ratio and bits per cell (``examples/paper2_smallnets.py`` says what runs; the
network is ``nn.smallnets.LSTMClassifier``).

    python examples/paper2_lstm_sst2.py --glue-dir ../shared/data/glue --out results/paper2_lstm
    python examples/paper2_lstm_sst2.py --glue-dir GLUE --out /tmp/p2 --tiny  # a smoke test, seconds
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper2_smallnets import main  # noqa: E402

if __name__ == "__main__":
    main("lstm", sys.argv[1:])
