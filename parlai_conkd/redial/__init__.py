"""The ReDial data every part of the project reads: found or downloaded, checked, preprocessed
once and cached under the datapath (:mod:`.build`, :mod:`.preprocess`). Below the agents and the
``redial_crs`` task, which both read it; imports no agent and no task."""
