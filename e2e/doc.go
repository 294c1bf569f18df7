// Package e2e holds orderflow's end-to-end tests: the three services running together on
// a real PostgreSQL and a real Kafka-protocol broker, driven through their public
// interfaces (REST, Kafka topics, SMTP).
package e2e
