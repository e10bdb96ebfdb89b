// Validates KEDA objects (a JSON array on stdin) against KEDA's CRD schemas, as compiled by @kubernetes-models/keda;
// prints a JSON array with, for each object, null or the validator's message. Node finds the package through
// NODE_PATH (tests/integration/test_kubernetes.py sets it to the bootstrap's .devstack/k8s-tools/node_modules).
const keda = require("@kubernetes-models/keda/keda.sh/v1alpha1");
const objects = JSON.parse(require("fs").readFileSync(0, "utf8"));
const results = objects.map((object) => {
  const Model = keda[object.kind];
  if (!Model) return `no KEDA model for kind ${object.kind}`;
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return error.message;
  }
});
process.stdout.write(JSON.stringify(results));
