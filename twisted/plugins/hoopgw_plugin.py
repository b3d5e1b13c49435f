from twisted.application.service import ServiceMaker

hoopgw = ServiceMaker("hoopgw", "hoopgw.tap", "Identity-aware access gateway (PostgreSQL, SSH, HTTP)", "hoopgw")
