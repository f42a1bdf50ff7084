"""The download pipeline: ``kedro run --pipelines download`` fetches DFF and extracts it into data.root."""

from kedro.pipeline import Node, Pipeline

from .nodes import plan_download


def create_pipeline(**kwargs) -> Pipeline:
    node = Node(plan_download, ["params:download", "params:data", "project_path"], "raw_download",
                name="plan_download")
    # Grouped under "download" in kedro viz; the raw tree it fills and the project folder keep their catalog names.
    return Pipeline([node], namespace="download", inputs={"project_path"}, outputs={"raw_download"},
                    parameters={"params:download", "params:data"})
