"""Following a reasoned answer through a video: frames, masks per track, and what is written per frame."""
