"""What both sides know of the SBOMs this service makes: their artifact type, and the properties it writes in them."""

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"  # the artifact type, and its one layer's media type
REQUESTED_PROPERTY = "imagebuilder:requested"  # "true" on the packages the spec asked for
SKIPPED_PROPERTY = "imagebuilder:skipped:{source}"  # records of a package database that could not be read
BASE_IMAGE_PROPERTY = "imagebuilder:base-image"
