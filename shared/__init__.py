"""What the edge daemon and the central service share: the face engine and its records."""
