"""`witcurate browse`: a static report of a run that a person can browse (OUT/browse/).

    run_state   each stage's state (done, failed, missing, not run) from its directory
    sampling    deterministic samples by a hash of the uid, read part by part
    samples     a sample as the report shows it, and dedupe's survivors beside their duplicates
    views       each stage x reason's rejects; both sides of the CLIP-score threshold
    queries     pairs per query, the queries at their cap, samples of each
    demo_truth  demo mode only: samples tagged with the noise the demo world injected
    thumbs      thumbnails read by offset from the download tars, within a budget
    index_page  the first page (the funnel), plain HTML
    site        the data files, the view page and the assets
    collect     everything above from one run directory
    build       OUT/browse/, written whole or not at all
    serve       the report over HTTP on loopback, for a remote machine
"""
