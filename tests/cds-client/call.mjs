// A real CDS Hooks client for the tests: @medplum/core builds the request the way an EHR
// does (running the service's prefetch templates against the FHIR server) and calls the
// service. Reads one JSON job on stdin, writes {"request": ..., "response": ...} on stdout.
//
// Job: {serviceRoot, fhirRoot, fhirPath, fhirToken, serviceId, patientId, userId,
//       draftOrders, discoveryToken?, callToken?}
import { MedplumClient, buildCdsRequest } from '@medplum/core';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const job = await readStdin();
const fhir = new MedplumClient({
  baseUrl: job.fhirRoot,
  fhirUrlPath: job.fhirPath,
  accessToken: job.fhirToken,
  cacheTime: 0,
  fetch: globalThis.fetch,
});
// The client sends its access token only under its own base URL: the service is its base.
const cds = new MedplumClient({
  baseUrl: job.serviceRoot,
  cdsServicesUrl: 'cds-services',
  cacheTime: 0,
  fetch: globalThis.fetch,
});
if (job.discoveryToken) cds.setAccessToken(job.discoveryToken);
const discovery = await cds.getCdsServices();
const service = discovery.services.find((s) => s.id === job.serviceId);
if (!service) throw new Error(`service ${job.serviceId} is not in the discovery response`);
const user = { resourceType: 'Practitioner', id: job.userId };
const context = {
  userId: `Practitioner/${job.userId}`,
  patientId: job.patientId,
  draftOrders: job.draftOrders,
};
const request = await buildCdsRequest(fhir, user, service, context);
if (job.callToken) cds.setAccessToken(job.callToken);
const response = await cds.callCdsService(service.id, request);
process.stdout.write(JSON.stringify({ request, response }));
