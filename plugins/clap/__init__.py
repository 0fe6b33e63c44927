"""CLAP analyzer: a text-audio embedding of every whole track, and text queries embedded for search.

Weights come from a laion-clap checkpoint on the hub (by default the one soundspan uses,
downloaded in the background into the data dir on first start), a local Hugging Face directory,
a hub id already in the local cache, or a local laion-clap `.pt`. While they download, or when
none can be loaded, the analyzer says so in the status and everything else keeps working. The
audio tower runs in this plugin's process pool; the text tower in a process of its own that a
text search starts and idleness stops (text_tower.py), so a search never waits behind the
analysis queue and its memory is held only while searches come.

The hooks are in plugin.py; analyzer.py is the analyzer the host keeps, runtime.py starts the model
(text tower, audio pool), settings.py holds the [clap] section, doctor.py the doctor's checks.
torch and transformers are imported only in the processes that load a model (the export, the
text tower, a torch audio tower), so the host itself never pays for them on a CPU.
"""
