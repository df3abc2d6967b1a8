// Validates the KEDA and prometheus-operator kinds of rendered manifests (YAML on stdin, several documents) with
// the kubernetes-models packages; other kinds are passed over. Prints one line per checked document; exits 1 on
// the first invalid one, or on a document of these groups whose kind it does not know.
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};

const input = readFileSync(0, "utf8");
let checked = 0;
for (const doc of yaml.loadAll(input)) {
  if (!doc) continue;
  const key = `${doc.apiVersion}/${doc.kind}`;
  const Model = models[key];
  if (!Model) {
    if (/^(keda\.sh|monitoring\.coreos\.com)\//.test(doc.apiVersion)) {
      console.error(`no schema for ${key}`);
      process.exit(1);
    }
    continue;
  }
  try {
    new Model(doc).validate();
  } catch (e) {
    console.error(`${key} ${doc.metadata && doc.metadata.name}: ${e.message}`);
    process.exit(1);
  }
  checked += 1;
  console.log(`valid ${key} ${doc.metadata.name}`);
}
console.log(`checked ${checked}`);
