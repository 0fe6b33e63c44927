"""MusiCNN analyzer: the authors' trained MSD/MTT weights on onnxruntime, in its own process pool.

Every track gets the mean probability of each of the model's 50 tags (genres, moods,
instruments), its top tags, and a 200-d embedding (the penultimate layer) for similarity.

The hooks are in plugin.py; analyzer.py is the analyzer the host keeps, runtime.py starts the model
and its pool, settings.py holds the [musicnn] section, doctor.py the doctor's checks.
"""
