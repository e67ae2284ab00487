"""The tables shipped with reram-cosim (this folder, data/ of the repository, installed as the
package ``reram_cosim_data``): load them by name, ``LevelTable.load("levels_b2")``; see
``device/data.py`` and README.md here."""
